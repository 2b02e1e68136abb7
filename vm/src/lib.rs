//! The virtual-memory subsystem.
#![no_std]
