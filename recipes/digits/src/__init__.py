"""User code shipped inside the digits bundle (imported only under trust_user_code)."""
