#include "hostloop-particles/cpp/kernel.h"

#include <stdexcept>

namespace particles {

void step_chunk(rust::Slice<float> px, rust::Slice<float> py, rust::Slice<float> pz,
                rust::Slice<float> vx, rust::Slice<float> vy, rust::Slice<float> vz, float dt,
                float gravity, float restitution) {
    const size_t n = px.size();
    if (py.size() != n || pz.size() != n || vx.size() != n || vy.size() != n || vz.size() != n) {
        throw std::invalid_argument("particle columns have different lengths");
    }
    if (!(dt >= 0.0f)) {
        throw std::invalid_argument("dt must not be negative");
    }
    float *x = px.data(), *y = py.data(), *z = pz.data();
    float *u = vx.data(), *v = vy.data(), *w = vz.data();
    for (size_t i = 0; i < n; ++i) {
        // Exactly the Rust kernel's operations, in the same order.
        v[i] = v[i] + gravity * dt;
        x[i] = x[i] + u[i] * dt;
        y[i] = y[i] + v[i] * dt;
        z[i] = z[i] + w[i] * dt;
        if (y[i] < 0.0f) {
            y[i] = -y[i];
            v[i] = -v[i] * restitution;
        }
    }
}

}  // namespace particles
