/*
 * VK_LAYER_HYDRA_pipeline_stats: a Vulkan layer that prints what the driver compiled each compute pipeline into
 * (VK_KHR_pipeline_executable_properties: on NVIDIA the register count, shared memory and so on), one line per
 * pipeline on stderr, in creation order:
 *
 *   [vk_stats] pipeline 7 "main": Register Count=168 ...
 *
 * Why: WGSL cannot state a kernel's registers, and registers decide how many workgroups share a multiprocessor
 * (docs/PERF.md, session AA). The layer asks for the extension at device creation and for statistics at pipeline
 * creation; nothing else changes. Built by tools/vk_stats/build.sh, enabled through the Vulkan
 * loader's VK_LAYER_PATH and VK_INSTANCE_LAYERS. One instance and one device at a time (a probe process).
 *
 * With VK_STATS_IR=<dir> it also asks for the driver's internal representations of each pipeline (whatever the driver
 * offers: assembly, intermediate forms) and writes each to <dir>/pipeline_<n>_<executable>_<representation>.txt.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vulkan/vk_layer.h>
#include <vulkan/vulkan.h>

#define EXPORT __attribute__((visibility("default")))

static PFN_vkGetInstanceProcAddr next_gipa;
static PFN_vkGetDeviceProcAddr next_gdpa;
static PFN_vkCreateComputePipelines next_create_compute;
static PFN_vkGetPipelineExecutablePropertiesKHR next_exec_props;
static PFN_vkGetPipelineExecutableStatisticsKHR next_exec_stats;
static PFN_vkGetPipelineExecutableInternalRepresentationsKHR next_exec_ir;
static const char *ir_dir; // VK_STATS_IR: where the internal representations go (unset: none asked for)
static VkInstance instance_handle;
static int stats_enabled;
static unsigned pipeline_count;

static VkLayerInstanceCreateInfo *instance_link(const VkInstanceCreateInfo *info) {
  VkLayerInstanceCreateInfo *c = (VkLayerInstanceCreateInfo *)info->pNext;
  while (c && !(c->sType == VK_STRUCTURE_TYPE_LOADER_INSTANCE_CREATE_INFO && c->function == VK_LAYER_LINK_INFO)) {
    c = (VkLayerInstanceCreateInfo *)c->pNext;
  }
  return c;
}

static VkLayerDeviceCreateInfo *device_link(const VkDeviceCreateInfo *info) {
  VkLayerDeviceCreateInfo *c = (VkLayerDeviceCreateInfo *)info->pNext;
  while (c && !(c->sType == VK_STRUCTURE_TYPE_LOADER_DEVICE_CREATE_INFO && c->function == VK_LAYER_LINK_INFO)) {
    c = (VkLayerDeviceCreateInfo *)c->pNext;
  }
  return c;
}

static VKAPI_ATTR VkResult VKAPI_CALL layer_CreateInstance(const VkInstanceCreateInfo *info,
                                                           const VkAllocationCallbacks *alloc, VkInstance *out) {
  VkLayerInstanceCreateInfo *link = instance_link(info);
  if (!link) return VK_ERROR_INITIALIZATION_FAILED;
  next_gipa = link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
  link->u.pLayerInfo = link->u.pLayerInfo->pNext;
  PFN_vkCreateInstance create = (PFN_vkCreateInstance)next_gipa(VK_NULL_HANDLE, "vkCreateInstance");
  VkResult r = create(info, alloc, out);
  if (r == VK_SUCCESS) instance_handle = *out;
  return r;
}

static VKAPI_ATTR VkResult VKAPI_CALL layer_CreateDevice(VkPhysicalDevice gpu, const VkDeviceCreateInfo *info,
                                                         const VkAllocationCallbacks *alloc, VkDevice *out) {
  VkLayerDeviceCreateInfo *link = device_link(info);
  if (!link) return VK_ERROR_INITIALIZATION_FAILED;
  PFN_vkGetInstanceProcAddr gipa = link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
  next_gdpa = link->u.pLayerInfo->pfnNextGetDeviceProcAddr;
  link->u.pLayerInfo = link->u.pLayerInfo->pNext;
  PFN_vkCreateDevice create = (PFN_vkCreateDevice)gipa(VK_NULL_HANDLE, "vkCreateDevice");
  PFN_vkEnumerateDeviceExtensionProperties enumerate =
      (PFN_vkEnumerateDeviceExtensionProperties)gipa(instance_handle, "vkEnumerateDeviceExtensionProperties");

  // Does the driver have the extension, and did the application enable it already?
  int supported = 0, enabled = 0;
  uint32_t n = 0;
  if (enumerate && enumerate(gpu, NULL, &n, NULL) == VK_SUCCESS && n) {
    VkExtensionProperties *props = calloc(n, sizeof *props);
    enumerate(gpu, NULL, &n, props);
    for (uint32_t i = 0; i < n; i++) {
      if (!strcmp(props[i].extensionName, VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME)) supported = 1;
    }
    free(props);
  }
  for (uint32_t i = 0; i < info->enabledExtensionCount; i++) {
    if (!strcmp(info->ppEnabledExtensionNames[i], VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME)) enabled = 1;
  }
  if (!supported) {
    fprintf(stderr, "[vk_stats] the driver lacks %s (%u device extensions listed): no statistics\n",
            VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME, n);
    VkResult r = create(gpu, info, alloc, out);
    if (r == VK_SUCCESS) next_create_compute = (PFN_vkCreateComputePipelines)next_gdpa(*out, "vkCreateComputePipelines");
    stats_enabled = 0;
    return r;
  }
  VkDeviceCreateInfo copy = *info;
  const char **names = calloc(info->enabledExtensionCount + 1, sizeof *names);
  memcpy(names, info->ppEnabledExtensionNames, info->enabledExtensionCount * sizeof *names);
  if (!enabled) names[copy.enabledExtensionCount++] = VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME;
  copy.ppEnabledExtensionNames = names;
  VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR feature = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR,
      .pNext = (void *)info->pNext,
      .pipelineExecutableInfo = VK_TRUE,
  };
  // (the feature also covers internal representations: VK_STATS_IR asks for them per pipeline)
  copy.pNext = &feature;
  VkResult r = create(gpu, &copy, alloc, out);
  free(names);
  if (r != VK_SUCCESS) return r;
  next_create_compute = (PFN_vkCreateComputePipelines)next_gdpa(*out, "vkCreateComputePipelines");
  next_exec_props = (PFN_vkGetPipelineExecutablePropertiesKHR)next_gdpa(*out, "vkGetPipelineExecutablePropertiesKHR");
  next_exec_stats = (PFN_vkGetPipelineExecutableStatisticsKHR)next_gdpa(*out, "vkGetPipelineExecutableStatisticsKHR");
  next_exec_ir = (PFN_vkGetPipelineExecutableInternalRepresentationsKHR)next_gdpa(
      *out, "vkGetPipelineExecutableInternalRepresentationsKHR");
  stats_enabled = next_exec_props && next_exec_stats;
  ir_dir = getenv("VK_STATS_IR");
  if (ir_dir && !*ir_dir) ir_dir = NULL;
  fprintf(stderr, "[vk_stats] device created, statistics %s\n", stats_enabled ? "on" : "unavailable");
  return r;
}

// Each internal representation the driver gives for executable `e` of pipeline `id`, to a file of its own.
static void write_irs(VkDevice device, const VkPipelineExecutableInfoKHR *einfo, unsigned id, uint32_t e) {
  uint32_t n = 0;
  if (next_exec_ir(device, einfo, &n, NULL) != VK_SUCCESS || !n) {
    fprintf(stderr, "[vk_stats] pipeline %u: no internal representations\n", id);
    return;
  }
  VkPipelineExecutableInternalRepresentationKHR *irs = calloc(n, sizeof *irs);
  for (uint32_t i = 0; i < n; i++) irs[i].sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INTERNAL_REPRESENTATION_KHR;
  next_exec_ir(device, einfo, &n, irs); // sizes first
  for (uint32_t i = 0; i < n; i++) irs[i].pData = calloc(irs[i].dataSize + 1, 1);
  next_exec_ir(device, einfo, &n, irs);
  for (uint32_t i = 0; i < n; i++) {
    char path[1024], name[VK_MAX_DESCRIPTION_SIZE];
    snprintf(name, sizeof name, "%s", irs[i].name);
    for (char *c = name; *c; c++) if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9'))) *c = '_';
    snprintf(path, sizeof path, "%s/pipeline_%u_%u_%s.txt", ir_dir, id, e, name);
    FILE *f = fopen(path, "wb");
    if (f) {
      fwrite(irs[i].pData, 1, irs[i].dataSize, f);
      fclose(f);
    }
    fprintf(stderr, "[vk_stats] pipeline %u: %s \"%s\" (%s, %zu bytes) -> %s\n", id, irs[i].isText ? "text" : "binary",
            irs[i].name, irs[i].description, (size_t)irs[i].dataSize, f ? path : "(not written)");
    free(irs[i].pData);
  }
  free(irs);
}

static void print_stats(VkDevice device, VkPipeline pipeline, const char *entry) {
  unsigned id = pipeline_count++;
  VkPipelineInfoKHR pinfo = {.sType = VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR, .pipeline = pipeline};
  uint32_t nexec = 0;
  if (next_exec_props(device, &pinfo, &nexec, NULL) != VK_SUCCESS) return;
  VkPipelineExecutablePropertiesKHR execs[8];
  if (nexec > 8) nexec = 8;
  for (uint32_t i = 0; i < nexec; i++) {
    execs[i] = (VkPipelineExecutablePropertiesKHR){.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_PROPERTIES_KHR};
  }
  next_exec_props(device, &pinfo, &nexec, execs);
  for (uint32_t e = 0; e < nexec; e++) {
    VkPipelineExecutableInfoKHR einfo = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR, .pipeline = pipeline, .executableIndex = e};
    uint32_t ns = 0;
    if (next_exec_stats(device, &einfo, &ns, NULL) != VK_SUCCESS) continue;
    VkPipelineExecutableStatisticKHR *st = calloc(ns ? ns : 1, sizeof *st);
    for (uint32_t i = 0; i < ns; i++) st[i].sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR;
    next_exec_stats(device, &einfo, &ns, st);
    fprintf(stderr, "[vk_stats] pipeline %u \"%s\" (%s, subgroup %u):", id, entry, execs[e].name,
            execs[e].subgroupSize);
    for (uint32_t i = 0; i < ns; i++) {
      switch (st[i].format) {
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR:
          fprintf(stderr, " %s=%s;", st[i].name, st[i].value.b32 ? "true" : "false");
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
          fprintf(stderr, " %s=%lld;", st[i].name, (long long)st[i].value.i64);
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR:
          fprintf(stderr, " %s=%llu;", st[i].name, (unsigned long long)st[i].value.u64);
          break;
        default:
          fprintf(stderr, " %s=%g;", st[i].name, st[i].value.f64);
      }
    }
    fprintf(stderr, "\n");
    free(st);
    if (ir_dir && next_exec_ir) write_irs(device, &einfo, id, e);
  }
}

static VKAPI_ATTR VkResult VKAPI_CALL layer_CreateComputePipelines(VkDevice device, VkPipelineCache cache,
                                                                   uint32_t count,
                                                                   const VkComputePipelineCreateInfo *infos,
                                                                   const VkAllocationCallbacks *alloc,
                                                                   VkPipeline *out) {
  if (!stats_enabled) return next_create_compute(device, cache, count, infos, alloc, out);
  VkComputePipelineCreateInfo *copy = calloc(count, sizeof *copy);
  for (uint32_t i = 0; i < count; i++) {
    copy[i] = infos[i];
    copy[i].flags |= VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR;
    if (ir_dir) copy[i].flags |= VK_PIPELINE_CREATE_CAPTURE_INTERNAL_REPRESENTATIONS_BIT_KHR;
  }
  // No pipeline cache: a cached pipeline may come back without its statistics.
  VkResult r = next_create_compute(device, VK_NULL_HANDLE, count, copy, alloc, out);
  free(copy);
  if (r == VK_SUCCESS) {
    for (uint32_t i = 0; i < count; i++) print_stats(device, out[i], infos[i].stage.pName);
  }
  return r;
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL layer_GetDeviceProcAddr(VkDevice device, const char *name);

static PFN_vkVoidFunction device_proc(const char *name) {
  if (!strcmp(name, "vkGetDeviceProcAddr")) return (PFN_vkVoidFunction)layer_GetDeviceProcAddr;
  if (!strcmp(name, "vkCreateComputePipelines")) return (PFN_vkVoidFunction)layer_CreateComputePipelines;
  return NULL;
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL layer_GetDeviceProcAddr(VkDevice device, const char *name) {
  PFN_vkVoidFunction f = device_proc(name);
  if (f) return f;
  return next_gdpa ? next_gdpa(device, name) : NULL;
}

static VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL layer_GetInstanceProcAddr(VkInstance instance, const char *name) {
  if (!strcmp(name, "vkGetInstanceProcAddr")) return (PFN_vkVoidFunction)layer_GetInstanceProcAddr;
  if (!strcmp(name, "vkCreateInstance")) return (PFN_vkVoidFunction)layer_CreateInstance;
  if (!strcmp(name, "vkCreateDevice")) return (PFN_vkVoidFunction)layer_CreateDevice;
  PFN_vkVoidFunction f = device_proc(name);
  if (f) return f;
  return next_gipa ? next_gipa(instance, name) : NULL;
}

EXPORT VKAPI_ATTR VkResult VKAPI_CALL vkNegotiateLoaderLayerInterfaceVersion(VkNegotiateLayerInterface *v) {
  if (v->loaderLayerInterfaceVersion > 2) v->loaderLayerInterfaceVersion = 2;
  v->pfnGetInstanceProcAddr = layer_GetInstanceProcAddr;
  v->pfnGetDeviceProcAddr = layer_GetDeviceProcAddr;
  v->pfnGetPhysicalDeviceProcAddr = NULL;
  return VK_SUCCESS;
}
