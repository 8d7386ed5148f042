#![no_std]
// Exists so that xlb-testbed can name this package as a build dependency.
