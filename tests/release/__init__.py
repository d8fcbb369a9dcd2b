"""Release artifacts: wheels, operator/proxy/admin images, the agent unit (issue 13)."""
