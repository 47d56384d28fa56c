"""Start the latent explorer on the shipped models and print the address to open.

    python -m experiments.explore
    python -m experiments.explore --vae variational_autoencoder/checkpoints/last.pt --port 0

The page shows the AE's and the VAE's latent planes side by side (decoding live under the
pointer), draws from the prior decoded by both and by a mixture fitted to the AE's codes, and the
conditional VAE's ten digits in one style. See docs/explorer.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from experiments.explore.models import NumberRange, exit_on_error, load_explorer
from experiments.explore.server import bind

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "results" / "models"
DEFAULT_PORT = 8000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.explore",
                                     description="A local web page to explore the AE's, the VAE's and the "
                                                 "conditional VAE's latent spaces.")
    parser.add_argument("--ae", type=Path, default=SHIPPED / "ae.pt",
                        help="the autoencoder's checkpoint (default: results/models/ae.pt)")
    parser.add_argument("--vae", type=Path, default=SHIPPED / "vae.pt",
                        help="the VAE's checkpoint, not conditional (default: results/models/vae.pt)")
    parser.add_argument("--cvae", type=Path, default=SHIPPED / "cvae.pt",
                        help="the conditional VAE's checkpoint (default: results/models/cvae.pt)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 opens it to the network (default: 127.0.0.1)")
    parser.add_argument("--port", type=NumberRange(int, 0, 65535), default=DEFAULT_PORT,
                        help=f"port to listen on, 0 to 65535; 0 for any free one (default: {DEFAULT_PORT})")
    parser.add_argument("--log-requests", action="store_true", help="print one line per request on stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with exit_on_error():
        # One thread decodes a 28 x 28 digit in about 1 ms; two threads took 24 ms for the AE on the
        # project's busy 2-core machine (synchronisation with a core that is busy elsewhere), and the
        # server decodes for several planes at once in threads of its own anyway.
        torch.set_num_threads(1)
        server = bind(args.host, args.port, args.log_requests)  # first: a taken port is an instant error
        try:
            server.attach(load_explorer(args.ae, args.vae, args.cvae))
            print(f"explorer: open {server.url}  (Ctrl-C to stop)", flush=True)
            server.serve_forever()
        finally:
            server.server_close()


if __name__ == "__main__":
    main()
