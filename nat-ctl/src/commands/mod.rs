//! One module per verb.

pub mod detach;
pub mod flush;
pub mod forward;
pub mod passthrough;
pub mod reload;
pub mod run;
pub mod sessions;
pub mod stats;
pub mod status;
pub mod top;
