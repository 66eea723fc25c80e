"""graph_passes: put dynattn modules into existing models with torch.fx passes."""
