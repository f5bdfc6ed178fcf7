"""Services (load balancing) as pure logic: the model and Maglev."""
