# istio-cni: the node installer image (entrypoint `istio-cni install`, see deploy/istio-cni.yaml).
#
#   docker build -t istio-cni:0.1.0 .                       builds dist/istio-cni from source (needs the npm registry)
#   docker build --target prebuilt -t istio-cni:0.1.0 .     packs the dist/istio-cni already built here (`npm run build`)
#
# The executable is self-contained (the Bun runtime inside); the runtime stage only needs glibc.

FROM docker.io/library/node:22-bookworm AS build
WORKDIR /src
COPY package.json package-lock.json ./
COPY build/bun-runtime/package.json build/bun-runtime/package-lock.json build/bun-runtime/
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY build/ build/
COPY src/ src/
RUN npm run build

FROM docker.io/library/debian:bookworm-slim AS runtime-base
# Runs as root: it writes into the host's /opt/cni/bin and /etc/cni/net.d.
ENTRYPOINT ["/usr/local/bin/istio-cni", "install"]

FROM runtime-base AS prebuilt
COPY dist/istio-cni /usr/local/bin/istio-cni

FROM runtime-base AS runtime
COPY --from=build /src/dist/istio-cni /usr/local/bin/istio-cni
