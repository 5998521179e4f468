"""The managed strong server's entry point: ``python -m llama_cpp.server`` with one load setting decided here.

    python -m cowest.models.llama_launch [--extra-bufts auto|on|off] <llama_cpp.server arguments>

``auto`` keeps llama.cpp's extra buffer types (weight repacking) unless the loaded library has AMX kernels and
this CPU has AMX (see :mod:`cowest.models.llama_build` for why that crashes). The decision and the library's
feature line go to stdout, i.e. the server log, before the model loads.
"""

from __future__ import annotations

import sys


def _apply(use_extra_bufts: bool) -> None:
    # llama_cpp.Llama builds its model parameters from this function; wrapping it sets the field for every load.
    import llama_cpp.llama_cpp as lib

    defaults = lib.llama_model_default_params

    def params():  # type: ignore[no-untyped-def]
        p = defaults()
        p.use_extra_bufts = use_extra_bufts
        return p

    lib.llama_model_default_params = params


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = "auto"
    if argv[:1] == ["--extra-bufts"]:
        mode, argv = argv[1], argv[2:]
    if mode not in ("auto", "on", "off"):
        raise SystemExit(f"--extra-bufts must be auto, on or off, got {mode!r}")
    import llama_cpp

    from cowest.models.cpu import cpu_flags
    from cowest.models.llama_build import extra_bufts_decision

    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    use, why = extra_bufts_decision(cpu_flags(), info)
    if mode != "auto":
        use, why = mode == "on", f"set by strong.local.extra_bufts={mode}"
    print(f"cowest: llama.cpp {llama_cpp.__version__}: {info}", flush=True)
    print(f"cowest: use_extra_bufts={use}: {why}", flush=True)
    if not use:
        _apply(False)
    from llama_cpp.server.__main__ import main as serve

    sys.argv = ["llama_cpp.server", *argv]
    serve()


if __name__ == "__main__":
    main()
