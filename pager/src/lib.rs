//! Pagers.
#![no_std]
