//! A value with the place it was written (a leaf: the workflow model, the
//! settings and the audience conditions all keep names this way, so checks
//! can point at them).

use crate::diagnostics::Pos;

/// A value together with where it was written in the user's file.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T> Located<T> {
    pub fn new(value: T, pos: Pos) -> Self {
        Located { value, pos }
    }
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}
