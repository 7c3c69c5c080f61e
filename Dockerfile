# swarmshift: one image, two daemons (`swarmshift autoscaler run`, `swarmshift bluegreen run`).
# Real users build on python:3.12-slim; the lab passes its own offline base image and wheels.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
# Extra pip arguments: the lab installs offline from wheels built on the host
# (PIP_ARGS="--no-index --find-links /src/.wheels"); by default pip uses PyPI.
ARG PIP_ARGS=""
COPY . /src
RUN python3 -m venv /venv \
 && /venv/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_ARGS} /src \
 && /venv/bin/pip uninstall -y --disable-pip-version-check pip setuptools wheel >/dev/null 2>&1 || true \
 && find /venv -name '__pycache__' -prune -exec rm -rf {} + \
 && /venv/bin/python3 -m compileall -q /venv/lib

FROM ${BASE_IMAGE}
# The routers' directories belong to the daemon's user: an empty named volume mounted there takes
# their owner on first use, so the controller can write the files Traefik or nginx read.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin swarmshift \
 && mkdir -p /etc/traefik/dynamic /etc/nginx/swarmshift \
 && chown 10001 /etc/traefik/dynamic /etc/nginx/swarmshift
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001
EXPOSE 8080
# Both daemons serve /healthz on their listen address (default 0.0.0.0:8080).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; port = os.environ.get('SWARMSHIFT_LISTEN', '0.0.0.0:8080').rsplit(':', 1)[1]; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % port, timeout=2)"]
ENTRYPOINT ["swarmshift"]
CMD ["autoscaler", "run"]
