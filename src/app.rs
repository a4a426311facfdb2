//! (in progress)
pub struct App;
