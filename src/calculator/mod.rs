//! The calculator domain.
