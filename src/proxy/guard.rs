//! Connection guard (slowloris): see the helper that implements it.
