"""The blue-green controller: deploy to the idle color, gate on health, switch routing, roll back."""
