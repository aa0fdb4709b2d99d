"""The synthetic driving world: streets, a spinning lidar and cameras by ray casting, with
ground truth for every point and pixel, recorded as real ROS 2 bags."""
