"""PyInstaller runtime hook of the CPU build: torchvision without its C extension.

PyPI's torchvision 0.28.0 is a CUDA build: its C extension (``_C.so``, ``image.so``) links torch's
CUDA libraries and ships libcudart/libnvjpeg, none of which the CPU torch 2.13.0 has, so the CPU build
leaves them out. The models SemBridge uses (``torchvision.models``) are pure Python, but importing
torchvision registers fake kernels for the extension's operators unconditionally
(``torchvision._meta_registrations``), which fails when the operators do not exist; an empty
stand-in for that one module skips the registration. ``torchvision.ops``/``io`` are then unusable,
and nothing in SemBridge uses them.
"""
import sys
import types

sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
