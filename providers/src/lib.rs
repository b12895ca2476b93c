//! Gantry providers: one client per remote generation-model API, the provider trait, error classes, usage for credits, and mock servers.
