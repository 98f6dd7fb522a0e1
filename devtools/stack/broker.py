"""Render the project's Mosquitto config for a local run and manage its password file."""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devtools.stack.processes import DevstackError, hand_over
from shared.broker_accounts import write_config_file

REPO_ROOT = Path(__file__).resolve().parents[2]
BROKER_CONFIG_DIR = REPO_ROOT / "mosquitto"
DEV_CERTS_SCRIPT = REPO_ROOT / "scripts" / "dev-certs.sh"
PLUGIN_IN_IMAGE = "/usr/lib/mosquitto_dynamic_security.so"


def dynsec_plugin() -> str:
    """Where this machine's Mosquitto keeps the dynamic-security plugin (Debian: multiarch)."""
    for candidate in (PLUGIN_IN_IMAGE, *glob.glob("/usr/lib/*/mosquitto_dynamic_security.so"),
                      "/usr/local/lib/mosquitto_dynamic_security.so"):
        if Path(candidate).exists():
            return candidate
    raise DevstackError("mosquitto_dynamic_security.so not found (Debian package mosquitto)")


@dataclass(frozen=True)
class BrokerSpec:
    rundir: Path
    port: int
    tls_port: int

    @property
    def config_dir(self) -> Path:
        return self.rundir / "config"

    @property
    def data_dir(self) -> Path:
        return self.rundir / "data"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "mosquitto.conf"

    @property
    def accounts_file(self) -> Path:
        return self.data_dir / "dynamic-security.json"

    @property
    def ca_file(self) -> Path:
        return self.config_dir / "certs" / "ca.crt"

    def argv(self) -> list[str]:
        return [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(self.config_file)]


def render_config(spec: BrokerSpec, source: Path = BROKER_CONFIG_DIR / "mosquitto.conf",
                  run_as: str | None = None) -> str:
    """The production config with local paths, loopback-only listeners and the given ports."""
    text = source.read_text()
    text = text.replace("/mosquitto/config/", f"{spec.config_dir}/")
    text = text.replace("/mosquitto/data/", f"{spec.data_dir}/")
    text = text.replace(PLUGIN_IN_IMAGE, dynsec_plugin())
    text, n_plain = re.subn(r"(?m)^listener 1883$", f"listener {spec.port} 127.0.0.1", text)
    text, n_tls = re.subn(r"(?m)^listener 8883$", f"listener {spec.tls_port} 127.0.0.1", text)
    if n_plain != 1 or n_tls != 1:
        raise DevstackError(f"{source} must have exactly one 'listener 1883' and 'listener 8883'")
    if run_as:
        text += f"\nuser {run_as}\n"
    return text


def prepare_broker(spec: BrokerSpec, passwords: dict[str, str],
                   devices: dict[str, str] | None = None, run_as: str | None = None) -> None:
    """Lay out config, accounts, dev certificates and data dir for one broker."""
    spec.config_dir.mkdir(parents=True, exist_ok=True)
    spec.data_dir.mkdir(parents=True, exist_ok=True)
    write_config_file(spec.accounts_file, passwords, devices)
    certs = spec.config_dir / "certs"
    try:
        subprocess.run(["bash", str(DEV_CERTS_SCRIPT), str(certs)], check=True,
                       capture_output=True)
    except subprocess.CalledProcessError as exc:
        raise DevstackError(f"dev-certs.sh failed: {exc.stderr.decode(errors='replace')}") \
            from exc
    spec.config_file.write_text(render_config(spec, run_as=run_as))
    hand_over(spec.rundir, run_as)
    # The CA certificate is public; clients running as us must read it.
    spec.ca_file.chmod(0o644)

