"""Triton import guard and the CPU-interpreter compatibility fix shared by the sparse kernels."""
from __future__ import annotations

import os

try:
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - no triton: the torch paths serve
    triton = None
    tl = None


def triton_available() -> bool:
    return triton is not None


# Triton reads the variable when it decorates the kernels (at import), so later changes mean nothing;
# read once instead of on every conv call.
_INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"


def interpreting() -> bool:
    """True under TRITON_INTERPRET=1 (kernels run on CPU tensors through Triton's interpreter)."""
    return _INTERPRETING


def _patch_interpreter_index() -> None:
    """Triton 3.6's CPU interpreter turns a runtime loop bound into ``int(ndarray of shape (1,))``,
    which NumPy >= 2.4 refuses; read the single element instead (interpreter only, no GPU effect)."""
    try:
        from triton.runtime import interpreter as interp
    except Exception:  # noqa: BLE001
        return
    if getattr(interp, "_propforge_index_fix", False) or not hasattr(interp, "_patch_lang_tensor"):
        return
    original = interp._patch_lang_tensor

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interp._patch_lang_tensor = patched
    interp._propforge_index_fix = True


if triton is not None and interpreting():
    _patch_interpreter_index()
