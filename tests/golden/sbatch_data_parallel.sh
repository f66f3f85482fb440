#!/bin/bash

# Parameters
#SBATCH --account='a'"'"'b"c $(touch PWNED) `touch PWNED2` ; touch PWNED3 #'
#SBATCH --array=0-5%4
#SBATCH --comment='a'"'"'b"c $(touch PWNED) `touch PWNED2` ; touch PWNED3 #'
#SBATCH --constraint='x&y|z'
#SBATCH --cpus-per-task=8
#SBATCH --exclusive
#SBATCH --gpus-per-node=4
#SBATCH --job-name=as-demo-0123456789abcdef
#SBATCH --mem=1536MB
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --open-mode=append
#SBATCH --output='/shared/work/w $(touch PWNED4) `x` '"'"'q"/jobs/%A_%a/%A_%a_0_log.out'
#SBATCH --partition=debug
#SBATCH --qos='a'"'"'b"c $(touch PWNED) `touch PWNED2` ; touch PWNED3 #'
#SBATCH --signal=USR2@90
#SBATCH --time=30
#SBATCH --wckey=submitit

# setup
module load cuda/12.1
export A='it''s'

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output '/shared/work/w $(touch PWNED4) `x` '"'"'q"/jobs/%A_%a/%A_%a_%t_log.out' /venv/bin/python -u -m submitit.core._submit FOLDER
