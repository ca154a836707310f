"""The laptop side of podvisor: `podvisor cloud` finds a GPU, launches a pod from the repo's template, waits until
its stack answers over SSH and stops it again, on RunPod or Vast.ai. It runs where the user's keys and SSH client
are, never inside a pod, and shares nothing with the pod's entrypoint but the command name."""
