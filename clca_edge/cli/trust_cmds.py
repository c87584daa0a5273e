"""``clca-edge keygen``: the Ed25519 key pair that signs bundles (``deploy --sign-key``) and that
devices trust (``--trusted-keys DIR`` / ``CLCA_EDGE_TRUSTED_KEYS``)."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import console, main, reports_errors

# The environment variable the device commands read --trusted-keys from (bundle.signature.TRUSTED_KEYS_ENV;
# spelled out here so the CLI's import stays light).
TRUSTED_KEYS_ENV = "CLCA_EDGE_TRUSTED_KEYS"


def trusted_keys_option(fn):
    return click.option(
        "--trusted-keys", "trusted_keys", default=None, envvar=TRUSTED_KEYS_ENV, show_envvar=True,
        type=click.Path(path_type=Path),
        help="Folder of trusted public keys (*.pub from `clca-edge keygen`): refuse a bundle that is unsigned, "
             "signed by another key, or changed after signing.")(fn)


def load_trusted(value):
    """--trusted-keys -> bundle.signature.TrustedKeys (None when not set)."""
    from ..bundle.signature import trusted_keys_from

    return trusted_keys_from(value)


@main.command()
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Folder for clca-edge.key (private, mode 0600) and clca-edge.pub (public).")
@click.option("--force", is_flag=True, help="Replace an existing key pair in --out.")
@reports_errors
def keygen(out: Path, force: bool) -> None:
    """Make an Ed25519 key pair for signed bundles.

    Keep clca-edge.key on the deploy machine (`deploy --sign-key OUT/clca-edge.key`); copy
    clca-edge.pub into each device's trusted-keys folder (`--trusted-keys DIR`, or the
    CLCA_EDGE_TRUSTED_KEYS the systemd unit sets)."""
    from ..bundle.signature import generate_keypair

    private, public, kid = generate_keypair(out, force=force)
    con = console()
    con.print(f"private key: {private} (mode 0600; keep it on the deploy machine)", highlight=False)
    con.print(f"public key:  {public} (copy into the device's trusted-keys folder)", highlight=False)
    con.print(f"key id:      {kid}", highlight=False)
