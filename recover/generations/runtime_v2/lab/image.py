"""What the lab's containers run, built offline from busybox-static: a rootfs dir for
`ctr run --rootfs`, and an OCI image archive for CRI pods (`ctr -n k8s.io images import`), which
holds a pause image (busybox running a long sleep: the pod's sandbox) and a busybox image.
Each is built once per process, under a temp dir removed at exit."""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path

from .versions import BUSYBOX, BUSYBOX_IMAGE, PAUSE_IMAGE

_lock = threading.Lock()  # labs in threads share what is built
_top: Path | None = None
_rootfs: Path | None = None
_archive: Path | None = None


def _workdir() -> Path:
    global _top
    if _top is None:
        _top = Path(tempfile.mkdtemp(prefix="recover-lab-image-"))
        atexit.register(shutil.rmtree, _top, True)
    return _top


def busybox_rootfs() -> Path:
    """A rootfs of busybox-static and its applet links."""
    global _rootfs
    with _lock:
        if _rootfs is None:
            rootfs = _workdir() / "rootfs"
            (rootfs / "bin").mkdir(parents=True)
            for d in ("proc", "sys", "dev", "etc", "tmp"):
                (rootfs / d).mkdir()
            shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
            # in a chroot, so that the links say /bin/busybox (the path inside the container)
            subprocess.run(["chroot", str(rootfs), "/bin/busybox", "--install", "-s", "/bin"],
                           check=True, timeout=60)
            _rootfs = rootfs
    return _rootfs


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def image_archive() -> Path:
    """An OCI image layout in a tar: PAUSE_IMAGE (`sleep 1000000`) and BUSYBOX_IMAGE (`sh`),
    one shared layer (the busybox rootfs), for linux/amd64."""
    global _archive
    rootfs = busybox_rootfs()
    with _lock:
        if _archive is not None:
            return _archive
        layer_tar = io.BytesIO()
        with tarfile.open(fileobj=layer_tar, mode="w", format=tarfile.PAX_FORMAT) as t:
            t.add(rootfs, arcname=".", recursive=True)
        layer_digest, layer = _blob(layer_tar.getvalue())
        blobs = {layer_digest: layer}
        index: dict = {"schemaVersion": 2, "manifests": []}
        for name, cmd in ((PAUSE_IMAGE, ["/bin/sleep", "1000000"]), (BUSYBOX_IMAGE, ["/bin/sh"])):
            config = {"architecture": "amd64", "os": "linux",
                      "config": {"Env": ["PATH=/bin"], "Cmd": cmd},
                      "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}
            config_digest, config_blob = _blob(json.dumps(config).encode())
            blobs[config_digest] = config_blob
            manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": config_digest, "size": len(config_blob)},
                        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                    "digest": layer_digest, "size": len(layer)}]}
            manifest_digest, manifest_blob = _blob(json.dumps(manifest).encode())
            blobs[manifest_digest] = manifest_blob
            index["manifests"].append({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": len(manifest_blob),
                "annotations": {"io.containerd.image.name": name,
                                "org.opencontainers.image.ref.name": name.split(":")[-1]},
                "platform": {"architecture": "amd64", "os": "linux"}})
        path = _workdir() / "images.tar"
        with tarfile.open(path, "w") as t:
            def add(member: str, data: bytes) -> None:
                info = tarfile.TarInfo(member)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
            add("index.json", json.dumps(index).encode())
            for digest, data in blobs.items():
                add("blobs/sha256/" + digest.split(":")[1], data)
        _archive = path
        return path
