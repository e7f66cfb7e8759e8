{
  "targets": [
    {
      "target_name": "sliceserve_lapack",
      "sources": ["eigh.c"],
      "cflags": ["-O2", "-Wall"],
      "defines": ["NAPI_VERSION=8"],
      "libraries": ["<!@(node -p \"process.env.SLICESERVE_LAPACK_LIBS || '-llapack'\")", "-ldl"]
    }
  ]
}
