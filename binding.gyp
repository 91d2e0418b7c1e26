{
  # Same libtorch and sources as CMakeLists.txt: both ask scripts/torch-config.js.
  "targets": [
    {
      "target_name": "repopt",
      "sources": ["<!@(node scripts/torch-config.js sources)"],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(node scripts/torch-config.js includes)"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_CPP_EXCEPTIONS",
        "NODE_ADDON_API_CPP_EXCEPTIONS_ALL",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "<!@(node scripts/torch-config.js defines)"
      ],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++14"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-O2", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter", "-ffp-contract=off"],
      "ldflags": ["<!@(node scripts/torch-config.js ldflags)"],
      "libraries": ["<!@(node scripts/torch-config.js libs)"]
    }
  ]
}
