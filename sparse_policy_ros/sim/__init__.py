"""MuJoCo table-top arm task, scripted expert, recording and evaluation."""
