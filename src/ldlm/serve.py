"""`ldlm serve`: a local web page that samples a model and shows its denoising step by step.

Standard library only (ThreadingHTTPServer): one static page (web/) and a JSON API.

    GET  /api/info       the model, its sampling controls (defaults and bounds) and the server's limits
    POST /api/generate   {"num": 4, "steps": 50, "noise_scale": 1.0, "seed": 0, ...} ->
                         {"samples": [...], "steps": [{"step", "t", "ms", "texts": [...]}], ...}

Safe by default: binds 127.0.0.1; the browser can set sampling numbers only (no paths, checkpoints
or code); every request is capped (samples, steps; the length is the model's) and requests run one
at a time, with at most `queue` of them admitted (the others get 503 at once); bad values get a
one-line message (400), never a traceback. On a loopback address, requests whose Host or Origin is
not local are refused, so another web site cannot drive the API through DNS rebinding.
"""
from __future__ import annotations

import ipaddress
import json
import math
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from .config import choices
from .errors import UserError

WEB = Path(__file__).with_name("web")
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
MAX_BODY = 4096  # bytes of a request body: a handful of numbers
HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                      "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}

# sampling setting -> (label, type, lower bound, upper bound or the name of a server limit, help)
CONTROLS = {
    "num": ("samples", int, 1, "max_num", "number of texts to sample"),
    "steps": ("steps", int, 1, "max_steps", "reverse-process steps (more: slower, usually better)"),
    "noise_scale": ("noise scale", float, 0.0, 2.0, "scale of the injected noise: lower = safer, less diverse"),
    "solver": ("solver", str, None, None, "sde: ancestral sampling; ode: deterministic DDIM"),
    "grid": ("time grid", str, None, None, "logsnr: steps uniform in log-SNR; uniform: uniform in t"),
    "readout_contrast": ("readout contrast", float, 0.0, 1.0,
                         "0: plain readout; more: words this latent asks for over common ones (more varied, less fluent)"),
    "stop_mass": ("end mass", float, 0.0, 1.0, "0: plain readout; m: a position ends the text when the end tokens hold >= m"),
    "mean_guidance": ("mean guidance", float, 0.0, 2.0, "0: none; g: each step's estimate pushed away from the mean latent"),
    "lexicon": ("training words only", bool, None, None, "on: only words the training text spells"),
    "lexicon_beam": ("lexicon beam", int, 1, 32, "beam width of that search (with training words only)"),
    "temperature": ("temperature", float, 0.05, 2.0, "token temperature"),
    "top_p": ("top-p", float, 0.05, 1.0, "nucleus sampling threshold"),
    "seed": ("seed", int, 0, 2**31 - 1, "same seed and settings: same texts"),
}
CHOICES = {k: choices(f"sample.{k}") for k in ("solver", "grid")}
TRAJECTORY = {"ldlm": "the text read out of the model's estimate of the clean latents at each step",
              "tencdm": "the text read out of the model's estimate of the clean hidden states at each step",
              "mdlm": "the text at each step, still-masked tokens shown as ░", "ar": "the text after each token"}


class Busy(Exception):
    """More requests are waiting than the server admits."""


class Service:
    """The model behind the page: validates a request's settings and runs one request at a time."""

    def __init__(self, model, max_num: int = 16, max_steps: int = 200, queue: int = 4):
        self.model = model
        self.limits = {"max_num": max_num, "max_steps": max_steps, "queue": queue,
                       "length": model.cfg.data.seq_len}
        self.controls = [k for k in CONTROLS if k in model.sample_keys]
        self._run = threading.Lock()
        self._count = threading.Lock()
        self._admitted = 0

    def info(self) -> dict:
        sc = self.model.cfg.sample
        controls = []
        for k in self.controls:
            label, typ, lo, hi, help_ = CONTROLS[k]
            hi = self.limits[hi] if isinstance(hi, str) else hi
            default = getattr(sc, k)
            if k == "num":
                default = min(4, hi)
            elif isinstance(hi, (int, float)) and typ is not str:
                default = min(max(default, lo), hi)
            controls.append({"key": k, "label": label, "type": typ.__name__, "min": lo, "max": hi,
                             "default": default, "help": help_, "choices": CHOICES.get(k)})
        ckpt = getattr(self.model, "checkpoint", "") or ""
        name = Path(ckpt).name
        if name.startswith("ckpt-"):
            name = f"{Path(ckpt).parent.name}/{name}"
        return {"algo": self.model.cfg.algo, "model": name, "controls": controls, "limits": self.limits,
                "trajectory": TRAJECTORY.get(self.model.cfg.algo, "the text at each step")}

    def parse(self, body: dict) -> dict:
        """Checked sampling settings from a request body, or a UserError naming the bad field."""
        if not isinstance(body, dict):
            raise UserError("the request must be a JSON object of settings")
        unknown = sorted(set(body) - set(self.controls))
        if unknown:
            raise UserError(f"'{unknown[0]}' cannot be set for this {self.model.cfg.algo} model; "
                            f"settable: {', '.join(self.controls)}")
        out = {}
        for k, v in body.items():
            label, typ, lo, hi, _ = CONTROLS[k]
            hi = self.limits[hi] if isinstance(hi, str) else hi
            if typ is str:
                if v not in CHOICES[k]:
                    raise UserError(f"{label} must be one of {', '.join(CHOICES[k])}")
                out[k] = v
                continue
            if typ is bool:  # JSON true/false only: "false" or 0 would read as a different setting than meant
                if not isinstance(v, bool):
                    raise UserError(f"{label} must be true or false, got {v!r}")
                out[k] = v
                continue
            if v is None:
                raise UserError(f"{label} is empty; give {'a whole number' if typ is int else 'a number'}")
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if typ is int:
                ok = ok and float(v).is_integer()
            if not ok:
                raise UserError(f"{label} must be {'a whole number' if typ is int else 'a number'}, got {v!r}")
            if not lo <= v <= hi:
                limit = " (this server's limit)" if isinstance(CONTROLS[k][3], str) else ""
                raise UserError(f"{label} must be between {lo} and {hi}{limit}, got {v}")
            out[k] = typ(v)
        return out

    def generate(self, settings: dict) -> dict:
        """Sample under the lock; Busy when `queue` requests are already admitted."""
        from .generate import generate

        with self._count:
            if self._admitted >= self.limits["queue"]:
                raise Busy
            self._admitted += 1
        try:
            with self._run:
                t0 = time.perf_counter()
                records = generate(self.model, return_trajectory=True, **settings)
                wall = time.perf_counter() - t0
        finally:
            with self._count:
                self._admitted -= 1
        first = records[0]["trajectory"]
        steps = [{"step": e["step"], "t": e["t"], "ms": e["ms"], "texts": [r["trajectory"][i]["text"] for r in records]}
                 for i, e in enumerate(first)]
        shown = {k: records[0][k] for k in self.model.sample_keys if k in records[0]}
        return {"samples": [r["text"] for r in records], "steps": steps, "settings": shown,
                "wall_ms": round(wall * 1000, 1)}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Handler(BaseHTTPRequestHandler):
    server_version = "ldlm-serve"
    service: Service  # set on the subclass made by make_server
    local_only: bool = True
    quiet: bool = False

    def log_message(self, fmt, *args):  # one line per request on stderr, unless quiet
        if not self.quiet:
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _allowed(self) -> bool:
        """On a loopback bind, only local Host (and Origin) names: no DNS rebinding from other sites."""
        if not self.local_only:
            return True
        host = urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
        origin = self.headers.get("Origin")
        if not _is_loopback(host) or (origin and origin != "null" and not _is_loopback(urlsplit(origin).hostname or "")):
            self._error(HTTPStatus.FORBIDDEN, "this server answers local pages only (Host/Origin is not localhost)")
            return False
        return True

    def do_GET(self):
        if not self._allowed():
            return
        path = urlsplit(self.path).path
        if path == "/api/info":
            return self._json(HTTPStatus.OK, self.service.info())
        if path in STATIC:
            name, ctype = STATIC[path]
            return self._send(HTTPStatus.OK, (WEB / name).read_bytes(), ctype)
        self._error(HTTPStatus.NOT_FOUND, f"no page {path}")

    do_HEAD = do_GET

    def do_POST(self):
        if not self._allowed():
            return
        if urlsplit(self.path).path != "/api/generate":
            return self._error(HTTPStatus.NOT_FOUND, "POST /api/generate only")
        try:
            length = int(self.headers.get("Content-Length") or -1)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length > MAX_BODY else HTTPStatus.LENGTH_REQUIRED,
                               f"send a JSON body of at most {MAX_BODY} bytes with its Content-Length")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            settings = self.service.parse(body)
            result = self.service.generate(settings)
        except json.JSONDecodeError as e:
            return self._error(HTTPStatus.BAD_REQUEST, f"the request is not JSON ({e.msg})")
        except UserError as e:
            return self._error(HTTPStatus.BAD_REQUEST, str(e))
        except Busy:
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE,
                               "the server is busy with other requests; try again in a moment")
        except Exception as e:  # noqa: BLE001 - the page gets one line, the console the traceback
            traceback.print_exc()
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"sampling failed ({type(e).__name__}); "
                               f"see the server's console")
        self._json(HTTPStatus.OK, result)


def make_server(model, host: str = "127.0.0.1", port: int = 7860, max_num: int = 16, max_steps: int = 200,
                queue: int = 4, quiet: bool = False) -> ThreadingHTTPServer:
    """A server for `model` (not yet serving: call `serve_forever`); port 0 picks a free port."""
    service = Service(model, max_num=max_num, max_steps=max_steps, queue=queue)
    handler = type("BoundHandler", (Handler,), {"service": service, "local_only": _is_loopback(host),
                                                "quiet": quiet})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port or --host") from None
    server.daemon_threads = True
    return server


def run_serve(args) -> None:
    from .generate import load_model

    for flag, v in (("--max-num", args.max_num), ("--max-steps", args.max_steps), ("--queue", args.queue)):
        if v < 1:
            raise UserError(f"{flag} must be at least 1, got {v}")
    model = load_model(args.ckpt, device=args.device)
    server = make_server(model, args.host, args.port, args.max_num, args.max_steps, args.queue, quiet=args.quiet)
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {model.cfg.algo} model {model.checkpoint} at http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    if not _is_loopback(args.host):
        print(f"warning: --host {args.host} makes the page reachable from other machines; anyone who can reach it "
              f"can use this machine's {next(model.parameters()).device.type.upper()} up to the limits",
              file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
