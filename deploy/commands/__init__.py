"""`sarcofed` sub-commands for the deployment: credentials (`pki`) and launchers (`deploy`)."""
