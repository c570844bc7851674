//! Mixed meshes with the reference Go receptor 1.6.9.
