"""User-facing errors: each names the file, the place and the fix, and the CLI prints it without a traceback."""
from __future__ import annotations


class VerikitError(Exception):
    """An error caused by the user's input or setup, with a message meant to be read as is."""

    def __init__(self, message: str, *, path: str | None = None, place: str | None = None,
                 fix: str | None = None):
        self.path, self.place, self.fix, self.detail = path, place, fix, message
        parts = []
        if path:
            parts.append(f"{path}" + (f" ({place})" if place else ""))
        elif place:
            parts.append(place)
        text = (": ".join(parts) + ": " if parts else "") + message
        if fix:
            text += f"\n  fix: {fix}"
        super().__init__(text)


class ModelError(VerikitError):
    """The ONNX model cannot be loaded or is not supported."""


class SpecError(VerikitError):
    """The specification (VNN-LIB or YAML) is malformed or does not fit the model."""


class PluginError(VerikitError):
    """Plugins conflict, or a method lacks a capability it needs."""
