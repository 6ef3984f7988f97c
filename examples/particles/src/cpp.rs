//! The cxx bridge to the C++ kernel (`cpp/kernel.cc`).

#[cxx::bridge(namespace = "particles")]
pub(crate) mod ffi {
    unsafe extern "C++" {
        include!("hostloop-particles/cpp/kernel.h");

        /// One chunk of particles; a C++ exception comes back as `Err`.
        fn step_chunk(
            px: &mut [f32],
            py: &mut [f32],
            pz: &mut [f32],
            vx: &mut [f32],
            vy: &mut [f32],
            vz: &mut [f32],
            dt: f32,
            gravity: f32,
            restitution: f32,
        ) -> Result<()>;
    }
}
