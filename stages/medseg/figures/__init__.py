"""Pictures for people, shared by the stages that draw: label overlays, captions, legends, grids."""
