"""`jvpn-xdp keygen` and `jvpn-xdp pubkey`: static X25519 keys, base64 like
WireGuard's (`wg genkey` / `wg pubkey`). Neither needs root."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from jvpn import keys
from jvpn.errors import JvpnError
from jvpn.files import open_private


@click.command(short_help="Make a new private key.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE",
              help="Write the private key to FILE (created with mode 0600) instead of stdout.")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def keygen(out: Path | None, force: bool) -> None:
    """Print a new base64 private key on stdout (or write it to FILE) and its
    public key on stderr as "public key: ..."."""
    private = keys.generate_private()
    text = keys.encode(private) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        _write_secret(out, text, force)
    click.echo(f"public key: {keys.encode(keys.public_from_private(private))}", err=True)


@click.command(short_help="Print the public key of a private key read from stdin.")
def pubkey() -> None:
    """Read a base64 private key on stdin and print its public key."""
    text = sys.stdin.read()
    if not text.strip():
        raise JvpnError("no private key on stdin (e.g. `jvpn-xdp pubkey < private.key`)")
    try:
        private = keys.decode(text)
    except keys.KeyError_ as e:
        raise JvpnError(f"private key on stdin: {e}") from None
    click.echo(keys.encode(keys.public_from_private(private)))


def _write_secret(path: Path, text: str, force: bool) -> None:
    """Write ``text`` to ``path`` readable by its owner only, 0600 from
    creation. Without ``force`` the file must not exist (O_EXCL: no race with
    another writer); with it, an existing file must be ours with one link
    (jvpn.files.open_private) and is truncated only after that check."""
    try:
        fd = open_private(path, os.O_WRONLY | (0 if force else os.O_EXCL))
    except FileExistsError:
        raise JvpnError(f"{path} exists: refusing to overwrite a key file "
                        "(pass --force to replace it)") from None
    except PermissionError:
        raise JvpnError(f"--out {path}: permission denied: cannot create the key file "
                        f"there (is {path.parent} writable by you? sudo?)") from None
    except FileNotFoundError:
        raise JvpnError(f"--out {path}: no such directory {path.parent}") from None
    except IsADirectoryError:
        raise JvpnError(f"--out {path}: a directory, not a file") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
