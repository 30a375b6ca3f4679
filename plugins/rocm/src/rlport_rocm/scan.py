"""Finding AMD GPUs without torch: the KFD device file and its sysfs topology, and AMD SMI
(``amdsmi``) for names and the driver version when it is installed.

``/dev/kfd`` is the compute interface every ROCm process opens (a container must be given it with
``--device /dev/kfd``). Each node of ``/sys/class/kfd/kfd/topology/nodes/<N>/properties`` is a CPU or
a GPU; a GPU node has a non-zero ``gfx_target_version`` (``90402`` is gfx942: major, minor and stepping,
the last two printed in hex in the gfx name, so ``90010`` is gfx90a). Roots are parameters so tests can
point them at a folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlport.devices import optional

TOPOLOGY = Path("class") / "kfd" / "kfd" / "topology" / "nodes"


@dataclass(frozen=True)
class KfdNode:
    """One GPU node of the KFD topology."""

    node: int
    gfx: str
    vendor_id: int = 0
    device_id: int = 0


@dataclass(frozen=True)
class AmdScan:
    """What the machine says about its AMD GPUs. ``kfd`` is whether the compute device file exists;
    ``names``/``driver`` come from AMD SMI or sysfs where available; ``amdsmi_error`` why AMD SMI was
    not used."""

    kfd: bool
    gpus: tuple[KfdNode, ...] = ()
    names: tuple[str, ...] = ()
    driver: str | None = None
    source: str = ""
    amdsmi_error: str = ""

    @property
    def count(self) -> int:
        return len(self.gpus) if self.kfd else 0

    @property
    def archs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(g.gfx for g in self.gpus))


def gfx_name(target_version: int) -> str:
    """KFD's ``gfx_target_version`` as a gfx name: ``90402`` -> ``gfx942``, ``90010`` -> ``gfx90a``,
    ``110000`` -> ``gfx1100``."""
    major, rest = divmod(target_version, 10000)
    minor, stepping = divmod(rest, 100)
    return f"gfx{major}{minor:x}{stepping:x}"


def parse_properties(text: str) -> dict[str, int]:
    """A KFD ``properties`` file (``name value`` per line) as integers; other lines are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def kfd_nodes(sys_root: Path | str = "/sys") -> list[KfdNode]:
    """The GPU nodes of the KFD topology, in node order."""
    root = Path(sys_root) / TOPOLOGY
    try:
        folders = sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    except OSError:
        return []
    out = []
    for folder in folders:
        try:
            props = parse_properties((folder / "properties").read_text())
        except OSError:
            continue
        version = props.get("gfx_target_version", 0)
        if version > 0:
            out.append(
                KfdNode(
                    int(folder.name), gfx_name(version), props.get("vendor_id", 0), props.get("device_id", 0)
                )
            )
    return out


def module_driver(sys_root: Path | str = "/sys") -> str | None:
    """The amdgpu kernel module's version (``/sys/module/amdgpu/version``, present for the DKMS
    driver), or ``None``."""
    try:
        return (Path(sys_root) / "module" / "amdgpu" / "version").read_text().strip() or None
    except OSError:
        return None


def smi_names(smi: Any) -> tuple[tuple[str, ...], str | None]:
    """Market names of the GPUs and the driver version, from AMD SMI (raises what it raises)."""
    smi.amdsmi_init()
    try:
        handles = smi.amdsmi_get_processor_handles()
        names = tuple(str(smi.amdsmi_get_gpu_asic_info(h).get("market_name", "")) for h in handles)
        driver = str(smi.amdsmi_get_gpu_driver_info(handles[0]).get("driver_version", "")) if handles else ""
        return names, driver or None
    finally:
        smi.amdsmi_shut_down()


def scan(*, sys_root: Path | str = "/sys", dev_root: Path | str = "/dev", smi: Any = None) -> AmdScan:
    """The KFD device file and topology, named by AMD SMI when it is installed and loads."""
    kfd = (Path(dev_root) / "kfd").exists()
    gpus = tuple(kfd_nodes(sys_root))
    names: tuple[str, ...] = ()
    driver = module_driver(sys_root)
    error = ""
    if kfd and gpus:
        if smi is None:
            smi, why = optional.load("amdsmi", "pip install 'rlport-rocm[amdsmi]'")
            error = f"AMD SMI unused: {why}" if why else ""
        if smi is not None:
            try:
                names, smi_driver = smi_names(smi)
                driver = smi_driver or driver
            except Exception as exc:  # AmdSmiLibraryException and friends
                error = f"AMD SMI failed: {type(exc).__name__}: {exc}"
    return AmdScan(kfd=kfd, gpus=gpus, names=names, driver=driver, source="KFD sysfs", amdsmi_error=error)
