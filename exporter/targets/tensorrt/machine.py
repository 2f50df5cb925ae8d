"""Is TensorRT here, is there a GPU, and which: the only questions asked of this machine.

Each imports tensorrt or torch lazily, so asking never fails for want of them; a missing piece
becomes BackendUnavailable (exit 3) with what to do instead.
"""

from __future__ import annotations

from exporter.errors import BackendUnavailable


def tensorrt_status() -> tuple[str | None, str]:
    """(installed TensorRT version or None, why not). Never raises."""
    try:
        import tensorrt as trt
    except ImportError:
        return None, "tensorrt not installed"
    except Exception as exc:  # noqa: BLE001 - a broken install (missing libnvinfer) raises OSError etc.
        return None, f"tensorrt cannot be imported ({type(exc).__name__}: {str(exc)[:120]})"
    return str(getattr(trt, "__version__", "0")), ""


def cuda_status() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU visible to torch"
    return True, ""


def machine_description() -> dict:
    """This machine's TensorRT version, GPU and compute capability (needs tensorrt and a CUDA GPU)."""
    import tensorrt as trt
    import torch

    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return {
        "tensorrt_version": trt.__version__,
        "gpu": torch.cuda.get_device_name(index),
        "compute_capability": f"{major}.{minor}",
    }


def require_tensorrt(purpose: str = "build") -> str:
    """The installed TensorRT version, or BackendUnavailable saying what to do (to 'build' or to 'run' an engine)."""
    version, why = tensorrt_status()
    todo = (
        "install tensorrt on an NVIDIA machine, or use --emit-script DIR to write a ready-to-run trtexec build kit"
        if purpose == "build"
        else "run this on the NVIDIA machine the engine was built for, with tensorrt installed"
    )
    if version is None:
        raise BackendUnavailable(
            f"{why}: {'building' if purpose == 'build' else 'running'} a TensorRT engine "
            f"needs the tensorrt package and an NVIDIA GPU; {todo}"
        )
    ok, why = cuda_status()
    if not ok:
        raise BackendUnavailable(f"tensorrt {version} is installed but {why}; {todo}")
    return version
