"""Fake OpenAI-compatible servers on 127.0.0.1 (http.server in a thread of the test process).

`FakeServer` answers from a script, then through `answer(path, body)` (default: echo the prompt). `served`
builds one that answers a prefilled assistant turn the way a real server does, around a scripted model:
  - "vllm":    the continuation only (`continue_final_message`); LoRA adapters are models of their own name
               (GET /v1/models lists them, POST /v1/load_lora_adapter adds one);
  - "llama":   llama.cpp's llama-server as the issue met it: the prefilled text, then the continuation;
               adapters are GGUF files given with --lora, chosen per request by `"lora": [{"id", "scale"}]`;
  - "fresh":   a server that cannot continue a turn: it closes the prefilled one and answers anew.
Stop strings apply to the generated text (as on real servers), and usage counts whitespace words. A request's
grammar is honoured where the real server reads it (vLLM: `structured_outputs.grammar`, llama-server:
`grammar`; `grammars=False`: ignored, as Ollama does): the model's text decoded within it (`decode_within`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from retro.llm.base import cut_at_stop

Model = Callable[[str, "str | None"], str]  # (prompt text, adapter name or None) -> generated text


class FakeServer:
    """An OpenAI-style server: replies from `script` first (status, body), then from `answer(path, body)`."""

    def __init__(self, answer: Callable[[str, dict], str] | None = None):
        self.script: list[tuple[int, str]] = []
        self.requests: list[dict] = []  # {"path", "headers", "body"} of every POST received
        self.delays: list[float] = []  # seconds to stall before answering, request by request
        self.headers: dict[str, str] = {}  # sent with every reply
        self.get: dict[str, Callable[[], Any]] = {}  # GET path -> the JSON it answers
        self.post: dict[str, Callable[[dict], tuple[int, str]]] = {}  # POST path -> (status, text), besides completions
        self.answer = answer or self.echo
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                route = server.get.get(self.path)
                self._send(200, json.dumps(route())) if route else self._send(404, '{"error": "not found"}')

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path in server.post:
                    self._send(*server.post[self.path](body))
                    return
                with server.lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    reply = server.script.pop(0) if server.script else (200, server.answer(self.path, body))
                    delay = server.delays.pop(0) if server.delays else 0.0
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(delay)
                with server.lock:
                    server.in_flight -= 1
                self._send(*reply)

            def _send(self, status: int, text: str):
                payload = text.encode()
                self.send_response(status)
                for name, value in server.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def echo(path: str, body: dict) -> str:
        if path.endswith("/chat/completions"):
            choice = {"message": {"role": "assistant", "content": "chat:" + body["messages"][-1]["content"]}}
        else:
            choice = {"text": "echo:" + body["prompt"]}
        return json.dumps({"choices": [choice], "usage": {"prompt_tokens": 11, "completion_tokens": 5}})


def served(kind: str, model: Model, base: str = "tiny", adapters: tuple[str, ...] = (),
           grammars: bool = True) -> FakeServer:
    """A server of `kind` ("vllm", "llama", "fresh") around `model`, serving these adapters (names);
    `grammars`: it decodes within a request's grammar (else it ignores the field)."""
    server = FakeServer()
    loaded = list(adapters)
    def load(body: dict) -> tuple[int, str]:
        loaded.append(body["lora_name"])
        return 200, '"Success: LoRA adapter added"'

    if kind == "vllm":
        server.get["/v1/models"] = lambda: {"data": [{"id": base}] + [{"id": a, "parent": base} for a in loaded]}
        server.post["/v1/load_lora_adapter"] = load
    if kind == "llama":
        server.get["/lora-adapters"] = lambda: [{"id": i, "path": f"/gguf/{a}.gguf", "scale": 0.0}
                                                for i, a in enumerate(loaded)]

    def adapter(body: dict) -> str | None:
        if kind == "vllm":
            return body["model"] if body["model"] != base else None
        on = [entry["id"] for entry in body.get("lora", []) if entry["scale"]]
        return loaded[on[0]] if on else None

    def grammar(body: dict) -> str | None:
        if not grammars:
            return None
        return body.get("structured_outputs", {}).get("grammar") if kind == "vllm" else body.get("grammar")

    def generate(prompt: str, body: dict) -> str:
        text = model(prompt, adapter(body))
        rule = grammar(body)
        return decode_within(rule, text, body["max_tokens"]) if rule else text

    def answer(path: str, body: dict) -> str:
        if not path.endswith("/chat/completions"):
            text = cut_at_stop(generate(body["prompt"], body), tuple(body.get("stop", ())))
            return _reply({"text": text}, body["prompt"], text)
        messages = body["messages"]
        prefill = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
        seen = "\n".join(m["content"] for m in messages)
        if prefill and kind == "fresh":  # the turn is closed: a new answer, which continues nothing
            text = "Sure! Here is my answer: " + model("\n".join(m["content"] for m in messages[:-1]), adapter(body))
        else:
            text = generate(seen, body)
        text = cut_at_stop(text, tuple(body.get("stop", ())))
        content = prefill + text if kind == "llama" and prefill else text
        return _reply({"message": {"role": "assistant", "content": content}}, seen, text)

    server.answer = answer
    return server


def _reply(choice: dict, prompt: str, generated: str) -> str:
    usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(generated.split()) or 1}
    return json.dumps({"choices": [choice], "usage": usage})


# A model's next byte after it left the grammar: the end where allowed, else a closing bracket, else a letter,
# digit or space, else any: a short way to an end, so a form's text gets one letter and closes.
UNWANTED = b"]" + bytes(range(ord("a"), ord("z") + 1)) + b"0123456789 " + bytes(range(0x21, 0x7F))


def decode_within(grammar: str, text: str, max_tokens: int) -> str:
    """What a server that honours a GBNF grammar writes when its model would write `text`: the model's bytes
    while the grammar allows them; once it allows none of the rest, its own short way to an end (UNWANTED).
    Byte by byte through llguidance (the hf backend's grammar engine) with a byte vocabulary."""
    import llguidance

    vocabulary = byte_vocabulary()
    matcher = llguidance.LLMatcher(vocabulary, llguidance.grammar_from("gbnf", grammar))
    assert not matcher.is_error(), matcher.get_error()
    wanted, out = text.encode(), bytearray()
    for _ in range(max_tokens * 4):
        allowed = matcher.compute_logit_bias()
        if wanted and allowed[wanted[0]]:
            byte, wanted = wanted[0], wanted[1:]
        elif allowed[EOS]:
            break
        else:
            wanted = b""
            byte = next(b for b in UNWANTED if allowed[b])
        assert matcher.consume_token(byte), matcher.get_error()
        out.append(byte)
    return out.decode()


EOS = 256


class _Bytes:
    """A vocabulary of the 256 bytes and an end token, as llguidance.TokenizerWrapper takes one."""

    def __init__(self):
        self.eos_token_id, self.bos_token_id = EOS, None
        self.tokens = [bytes([b]) for b in range(256)] + [b"<eos>"]
        self.special_token_ids = [EOS]

    def __call__(self, text: bytes | str) -> list[int]:
        return list(text if isinstance(text, bytes) else text.encode())


def byte_vocabulary():
    import llguidance

    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Bytes()), slices=[])
