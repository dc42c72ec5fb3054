#!/bin/sh
# Builds the pipeline-statistics layer (vk_stats_layer.c) into $1 (default .device/vk_stats), with its loader manifest.
# Needs a C compiler and the Vulkan headers: Debian's libvulkan-dev, or its .deb unpacked (VULKAN_INCLUDE=<dir>/usr/include).
set -e
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-.device/vk_stats}
mkdir -p "$out"
cc -O2 -shared -fPIC -fvisibility=hidden ${VULKAN_INCLUDE:+-I"$VULKAN_INCLUDE"} -o "$out/libvk_stats_layer.so" \
  "$here/vk_stats_layer.c"
cat > "$out/vk_stats_layer.json" <<'JSON'
{
  "file_format_version": "1.1.2",
  "layer": {
    "name": "VK_LAYER_HYDRA_pipeline_stats",
    "type": "GLOBAL",
    "library_path": "./libvk_stats_layer.so",
    "api_version": "1.3.239",
    "implementation_version": "1",
    "description": "Prints each compute pipeline's driver statistics (registers, shared memory) on stderr"
  }
}
JSON
echo "built $out/libvk_stats_layer.so; enable it with: export VK_LAYER_PATH=$out VK_INSTANCE_LAYERS=VK_LAYER_HYDRA_pipeline_stats"
