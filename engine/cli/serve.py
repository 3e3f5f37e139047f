"""`facet serve`: vLLM's OpenAI-compatible server with facet's settings and the shipped adapters."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from engine.models import DEFAULT_MODEL


def add_serve_command(sub) -> None:
    p = sub.add_parser("serve", help="start vLLM's OpenAI-compatible server with the model and adapters",
                       description="Start `vllm serve` (as python -m vllm.entrypoints.openai.api_server) with the "
                       "settings facet's clients expect: compact-JSON xgrammar structured outputs, adapters served "
                       "under their task names, prefix caching, and on CPU fp32 with every core for the model. "
                       "Point clients at it with --backend openai --base-url http://HOST:PORT/v1 (it prints the options, with "
                       "--schema-as grammar for its xgrammar: faster span schemas).",
                       epilog="examples:\n  facet serve --adapter adapters/extract            # served as 'extract'\n"
                       "  facet extract products.jsonl --backend openai --adapter extract --schema-as grammar -o out.jsonl\n"
                       "  facet serve --port 8001 --dry-run                   # print the command only\n"
                       "  facet serve -- --tensor-parallel-size 2             # anything after -- goes to vLLM\n"
                       "scale out: run one server per GPU/machine and put a router (e.g. nginx, vLLM's router) in "
                       "front;\nfacet's openai backend retries and resumes, so replicas can come and go.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="model to serve (also its served name)")
    p.add_argument("--adapter", action="append", metavar="[NAME=]PATH",
                   help="LoRA adapter to serve (repeatable); NAME defaults to the task it was trained for. "
                   "Default: the shipped adapter, merged into the weights and served as 'default' (clients: "
                   "--adapter default); 'none': the base model only")
    p.add_argument("--no-merge", action="store_true",
                   help="serve the shipped adapter as LoRA beside the base model instead of merged")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--grammar", choices=["xgrammar", "llguidance"], default="xgrammar",
                   help="structured-output engine (default xgrammar)")
    p.add_argument("--max-model-len", type=int, default=4096, help="longest prompt + answer in tokens")
    p.add_argument("--merge-adapter", action="store_true",
                   help="serve the one --adapter merged into the weights, under its name only (~1.2-1.3x the "
                   "products/s of LoRA on the CPU build; the base model is then not served)")
    p.add_argument("--dry-run", action="store_true", help="print the server command and exit")
    p.add_argument("vllm_args", nargs="*", metavar="-- VLLM_ARGS", help="extra arguments for vLLM, after --")
    p.set_defaults(func=cmd_serve)


def _named_adapters(specs: list[str] | None) -> dict[str, str]:
    """``NAME=PATH`` or ``PATH`` (named by the task in its provenance, else by the folder) -> {name: path}."""
    out: dict[str, str] = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep:
            path = spec
            prov = Path(path) / "facet_provenance.json"
            name = json.loads(prov.read_text()).get("task") if prov.is_file() else None
            name = name or Path(path).name
        if name in out:
            raise ValueError(f"two adapters are named {name!r}; name them: --adapter NAME=PATH")
        out[name] = path
    return out


def serve_client_hint(model: str, adapters: list[str], host: str, port: int, grammar: str,
                      merged: bool = False) -> str:
    """The options that point a facet client at this server, with the faster span-schema form where it applies."""
    where = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    opts = f"--backend openai --base-url http://{where}:{port}/v1"
    opts += f" --model {model}" if model != DEFAULT_MODEL and not merged else ""  # merged: the base is not served
    several = len(adapters) > 1
    opts += f" --adapter {'NAME' if several else adapters[0]}" if adapters else ""
    opts += " --schema-as grammar" if grammar == "xgrammar" else ""  # compiled ~7x faster by vLLM (README)
    names = f" (NAME: {' | '.join(adapters)})" if several else ""
    return f"clients: facet TASK FILE {opts} -o OUT.jsonl{names}"


def cmd_serve(args) -> int:
    import shlex

    from engine import adapters as shipped
    from engine.adapters import NONE
    from engine.serve import serve_command

    merge = args.merge_adapter
    if args.adapter and [a.lower() for a in args.adapter] == [NONE]:
        adapters = {}
    elif args.adapter:
        adapters = _named_adapters(args.adapter)
    elif (folders := shipped.shipped_folders()) and args.model == DEFAULT_MODEL:
        # the shipped adapters under their folder names (extract, classify, ...); one alone serves every
        # task merged into the weights, several are served as LoRA beside the base model
        adapters = {p.name: str(p) for p in folders}
        merge = len(folders) == 1 and not args.no_merge
    else:
        adapters = {}
    argv, env = serve_command(args.model, adapters, host=args.host, port=args.port,
                              grammar=args.grammar, max_model_len=args.max_model_len, extra=args.vllm_args,
                              merge=merge, dry_run=args.dry_run)
    print("facet: " + shlex.join(argv), file=sys.stderr)
    print("facet: " + serve_client_hint(args.model, sorted(adapters), args.host, args.port,
                                        args.grammar, merged=merge), file=sys.stderr)
    if args.dry_run:
        return 0
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        from engine.backends.vllm import INSTALL_HINT

        raise ValueError(INSTALL_HINT)
    os.execve(argv[0], argv, env)  # the server takes over this process: Ctrl-C stops it


