"""Cloud choice: compare providers and regions on the same migration and recommend one."""
