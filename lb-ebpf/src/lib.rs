#![no_std]
// Exists so that lb-user can name this package as a build dependency.
