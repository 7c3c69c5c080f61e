"""Benchmark: the size of the swarmshift image, measured on the lab base, and what it comes to on python:3.12-slim.

Run on the lab (as root, after `make lab`):  .venv/bin/python -m bench.image_size

The Dockerfile's runtime stage is the base image plus two layers: the user (and the routers'
directories) and the /venv copied from the build stage. Docker reports each layer's size in the
image history, so the image on any base is that base's size plus those layers. python:3.12-slim
cannot be pulled on the lab (no registry), so its figure is an estimate by that sum; where the
image is present locally (`docker image inspect python:3.12-slim`), its real size is used.
"""

from __future__ import annotations

import docker
import docker.errors

from bench.report import machine, update_section
from tests.support import lab

IMAGE = "swarmshift:lab"
SLIM = "python:3.12-slim"
LIMIT = 200 * 1000 * 1000
LAB_STACK_IMAGES = ("swarmshift-cadvisor:lab", "swarmshift-prometheus:lab", "swarmshift-alertmanager:lab",
                    "swarmshift-nginx:lab", lab.DEMO_IMAGE)


def mb(size: float) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def own_layers(client: docker.DockerClient, image: str, base_size: int) -> list[tuple[str, int]]:
    """The layers the Dockerfile adds on top of the base, (what, bytes), newest last."""
    history = list(reversed(client.api.history(image)))
    total, out = 0, []
    for layer in history:
        total += layer["Size"]
        if total <= base_size:
            continue  # still within the base image's own layers
        if layer["Size"]:
            created = layer["CreatedBy"].removeprefix("/bin/sh -c ").removeprefix("#(nop) ").strip()
            if created.startswith("COPY") and created.endswith(" in /venv"):
                created = "COPY --from=build /venv /venv"  # the history names the directory by its hash
            elif len(created) > 60:
                created = created[:57] + "..."
            out.append((created, layer["Size"]))
    return out


def main() -> None:
    client = lab.connect()
    try:
        image = client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        raise SystemExit(f"{IMAGE} is missing: run `make lab`") from None
    base = client.images.get(lab.BASE_IMAGE)
    size, base_size = image.attrs["Size"], base.attrs["Size"]
    layers = own_layers(client, IMAGE, base_size)
    added = sum(n for _, n in layers)
    assert base_size + added == size, (base_size, added, size)
    venv = next(n for what, n in layers if "/venv" in what)
    try:
        slim = client.images.get(SLIM).attrs["Size"]
        slim_line = (f"| `{SLIM}` (present locally, measured) | {mb(slim)} | {mb(slim + added)} | "
                     f"{'yes' if slim + added < LIMIT else '**no**'} |")
    except docker.errors.ImageNotFound:
        slim = None
        slim_line = (f"| `{SLIM}` (cannot be pulled here: estimated) | B | B + {mb(added)} | "
                     f"yes while B < {mb(LIMIT - added)} |")

    slim_note = "measured above." if slim else (
        "the registry cannot be reached from the lab, so\n"
        f"  the base's size B is not measured here. The method: B + {mb(added)}, which stays under\n"
        f"  200 MB for any B under {mb(LIMIT - added)}. B is a Debian bookworm slim root file system with a\n"
        "  CPython and no compilers, the same make-up as the lab base, so expect a figure close to the lab's.")

    lab_images = []
    for tag in LAB_STACK_IMAGES:
        try:
            lab_images.append((tag, client.images.get(tag).attrs["Size"]))
        except docker.errors.ImageNotFound:
            lab_images.append((tag, None))

    body = f"""
## Image size

`.venv/bin/python -m bench.image_size` ({machine()}).
Uncompressed sizes as `docker image inspect` reports them (MB = 10^6 bytes). The runtime stage is the
base image plus the layers below, whatever the base.

| base image | base | swarmshift image | under 200 MB |
|---|---:|---:|---|
| `{lab.BASE_IMAGE}` (the lab's: Debian bookworm minbase + python3 {_python(client)}) | {mb(base_size)} | **{mb(size)}** | {'yes' if size < LIMIT else '**no**'} |
{slim_line}

Layers the Dockerfile adds, measured in the image history:

| layer | size |
|---|---:|
""" + "\n".join(f"| `{what}` | {mb(n)} |" for what, n in layers) + f"""

- The /venv (the swarmshift wheel and its dependencies, compiled to bytecode, no pip) is
  **{mb(venv)}**; everything else the image holds is the base.
- On `{SLIM}` the image is that base plus the same layers: {slim_note}
- The lab builds /venv for its Python {_python(client)}; on 3.12 the compiled wheels (pydantic-core,
  aiohttp, ...) are those built for 3.12, so the layer there may differ slightly (not measured).
- The lab variant's other images, for comparison (`make lab`; not part of the product):
""" + "\n".join(f"  `{tag}` {mb(n) if n else 'not built'}" + (";" if i < len(lab_images) - 1 else ".")
                for i, (tag, n) in enumerate(lab_images)) + "\n"
    update_section("image", body)
    print(body)


def _python(client: docker.DockerClient) -> str:
    out = client.containers.run(IMAGE, ["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                                entrypoint="python3", remove=True, labels={lab.LABEL: lab.OWNER})
    return out.decode().strip()


if __name__ == "__main__":
    main()
