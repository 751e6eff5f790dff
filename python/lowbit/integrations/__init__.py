"""Routes other libraries' calls to lowbit: `lowbit.integrations.bitsandbytes.patch()`."""
