//! Host side of the in-kernel tests (filled in below).
