// fastwin's caching CPU allocator for inference forwards (activation_arena.cpp): its Python bindings.
#pragma once

#include <torch/extension.h>

namespace fastwin {

// Adds arena_supported / arena_enter / arena_exit / arena_release / arena_stats to the module.
void bind_activation_arena(pybind11::module_& m);

}  // namespace fastwin
