//! Tests of the DAM simulator, in process and as a binary, in one test binary.

mod binary;
mod cloudinary_version;
mod sim;
