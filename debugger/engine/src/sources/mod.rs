//! Each way into a target. (Minimal on the `plugin` branch: the refactor adds the others.)

pub mod plugin;
