# syntax=docker/dockerfile:1
#
# SliceServe on an NVIDIA GPU: onnxruntime-node with its CUDA 12 execution provider.
#
#   docker build -t sliceserve:gpu .
#   docker run --gpus all -p 8080:8080 -v sliceserve-cache:/var/cache/sliceserve sliceserve:gpu
#
# Why CUDA 12 (docs/gpu.md): onnxruntime-node 1.29.0 installs its own version-matched CUDA
# provider from NuGet when ONNXRUNTIME_NODE_INSTALL=cuda12; that build links the CUDA 12
# runtime, cuBLAS and cuDNN 9, which the cudnn-runtime base image provides. Any driver that
# supports CUDA 12 runs it, CUDA 13 drivers included.

ARG NODE_IMAGE=node:20-bookworm-slim
ARG CUDA_IMAGE=nvidia/cuda:12.9.1-cudnn-runtime-ubuntu22.04

# Node 20 (the upstream linux-x64 build, which needs glibc >= 2.28) and npm come from here.
FROM ${NODE_IMAGE} AS node

# ---- build: dependencies with the CUDA provider, TypeScript, the optional LAPACK addon -------
FROM ${CUDA_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 make g++ liblapack-dev libopenblas-dev \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/include/node /usr/local/include/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm && node --version && npm --version

WORKDIR /app
# package.json's allowScripts denies onnxruntime-node's postinstall (CI cannot reach NuGet);
# the script is run explicitly below, and reads this variable.
ENV ONNXRUNTIME_NODE_INSTALL=cuda12
COPY package.json package-lock.json .npmrc ./
# Install scripts run explicitly: npm versions differ in which dependency scripts they allow.
RUN npm ci --ignore-scripts --no-audit --no-fund \
 && node node_modules/onnxruntime-node/script/install \
 && test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so \
 && test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_shared.so

COPY . .
RUN npm run build \
 && if [ -f native/build-lapack.js ]; then node native/build-lapack.js --optional; fi \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund \
 && rm -rf node_modules/onnxruntime-node/bin/napi-v6/darwin \
           node_modules/onnxruntime-node/bin/napi-v6/win32 \
           node_modules/onnxruntime-node/bin/napi-v6/linux/arm64

# ---- runtime: CUDA 12 + cuDNN 9 runtime libraries, Node 20, the built app --------------------
FROM ${CUDA_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates liblapack3 libopenblas0-pthread \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sliceserve \
 && useradd --system --uid 10001 --gid sliceserve --home-dir /app --shell /usr/sbin/nologin sliceserve \
 && mkdir -p /var/cache/sliceserve \
 && chown sliceserve:sliceserve /var/cache/sliceserve
COPY --from=node /usr/local/bin/node /usr/local/bin/node

WORKDIR /app
# Owned by root: the server user reads the app and writes only to the cache volume.
COPY --from=build /app /app

# GLIBC_TUNABLES: malloc advises transparent huge pages for the weights on the CPU path
# (runtime/huge-pages.ts: ~9 % faster batch-1 decode measured on 2 cores).
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    SLICESERVE_CACHE_DIR=/var/cache/sliceserve \
    SLICESERVE_DEVICE=auto \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1

VOLUME ["/var/cache/sliceserve"]
EXPOSE 8080
USER sliceserve

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

CMD ["node", "bin/sliceserve.js", "serve"]
