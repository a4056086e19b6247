//! The conformance fixtures.
