"""The errors a user can fix. Each message names the object and the next step; the CLI prints one line."""


class RetroError(Exception):
    """Base of every error that is the user's to fix (bad config, missing model, busy lake...)."""


class ConfigError(RetroError):
    """A setting is missing, unknown or out of range."""


class LakeError(RetroError):
    """The lake cannot be opened, read or written (missing extension, corrupt file, refused query)."""


class LakeBusyError(LakeError):
    """Another process holds the lake's write lock past the timeout."""


class ModelNotFoundError(RetroError):
    """A model, model package or adapter cannot be found or does not fit its base."""


class BackendUnreachableError(RetroError):
    """An LLM server did not answer (after retries): it may come back, so a flow retries."""


class BackendRefusedError(RetroError):
    """An LLM server refused a request (HTTP 4xx: the key, the model name, too long a prompt): asking again
    gets the same answer, so no flow retries it."""


class UnknownEnvError(RetroError):
    """An environment, split or task id that does not exist."""


class DataError(RetroError):
    """A shipped or user-given data file is malformed."""

