pub mod sandbox;
pub mod test_connection;
