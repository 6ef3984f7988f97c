// The particles step kernel in C++: one call per chunk, slices crossing without a copy.
#pragma once
#include "rust/cxx.h"

namespace particles {

// Advances one chunk of particles by `dt` under `gravity` (negative: down the y axis) and
// bounces them on the floor y = 0 with `restitution`. All slices have the chunk's length.
// Throws std::invalid_argument on mismatched slices or a negative dt: cxx turns that into an
// error for the step, never an abort.
void step_chunk(rust::Slice<float> px, rust::Slice<float> py, rust::Slice<float> pz,
                rust::Slice<float> vx, rust::Slice<float> vy, rust::Slice<float> vz, float dt,
                float gravity, float restitution);

}  // namespace particles
